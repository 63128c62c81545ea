// mesh/errors.ts — errors a handler throws on purpose.

/**
 * The event can never succeed (no tariff for the customer, say): it is dead-lettered at once with `reason`,
 * instead of being retried up to max deliveries.
 */
export class PermanentError extends Error {
  override name = "PermanentError"
  constructor(readonly reason: string, message: string = reason) {
    super(message)
  }
}

/** A worker cannot start: a missing consumer, a refused permission. The message says what to do. */
export class StartupError extends Error {
  override name = "StartupError"
}
