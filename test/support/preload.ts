// Loaded before every test file (bunfig.toml): whatever a test forgets to stop, or leaves
// behind when it fails before its own cleanup, is stopped when the run ends.
import { afterAll } from 'bun:test'
import { stopAll } from './cluster'
import { destroyAllLabs } from './netns'

// Processes first: a node must not outlive the namespace it runs in.
afterAll(async () => {
  await stopAll(2000)
  destroyAllLabs()
}, 30_000)
