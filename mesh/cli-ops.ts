// mesh/cli-ops.ts — the operator commands of `logiflow` (tail, status, dlq, publish).
import type { Command } from "./cli.ts"

export const commands: Record<string, Command> = {}
