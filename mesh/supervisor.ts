// mesh/supervisor.ts — `logiflow up`: placeholder until written
import type { Io } from "./cli.ts"
export async function up(_args: string[], _io: Io): Promise<number> {
  throw new Error("logiflow up is being written")
}
