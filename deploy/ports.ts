// deploy/ports.ts — prints every worker's default HTTP port as JSON, from its spec in contracts/topology.ts.
// The images run it at build time into deploy/ports.json, which the health check reads: the ports stay declared once.
import { workerNames, workers } from "../contracts/topology.ts"

console.log(JSON.stringify(Object.fromEntries(workerNames.map((w) => [w, workers[w].port]))))
