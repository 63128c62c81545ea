export * from "./events.ts"
export * from "./envelope.ts"
export * from "./topology.ts"
export * from "./dlq.ts"
