/**
 * Resolves as soon as `predicate` returns true (polling every few ms); rejects at the deadline
 * with `what`, so a failing test says what it waited for instead of timing out blindly.
 */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  what = 'condition',
): Promise<void> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    if (await predicate()) return
    if (performance.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await Bun.sleep(5)
  }
}
