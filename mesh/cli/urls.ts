// mesh/cli/urls.ts — where a worker of the running mesh answers over HTTP, for commands that talk to one (a portal
// link, the ops API): `<NAME>_URL`, else the URL the running `npm start` wrote into its session (the port it really
// got, which moves off a busy default), else `<NAME>_PORT` or the worker's default port on 127.0.0.1.
import { type WorkerName, workers } from "../../contracts/mod.ts"
import { env } from "../env.ts"
import { session } from "./io.ts"

export function workerUrl(name: WorkerName): string {
  const variable = `${name.toUpperCase()}_URL`
  const given = env(variable) || session()[variable]
  if (given) return given.replace(/\/+$/, "")
  return `http://127.0.0.1:${env(`${name.toUpperCase()}_PORT`) || workers[name].port}`
}
