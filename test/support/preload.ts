// Loaded before every test file (bunfig.toml): whatever a test forgets to stop, or leaves
// behind when it fails before its own cleanup, is stopped when the run ends.
import { afterAll } from 'bun:test'
import { stopAll } from './cluster'

afterAll(() => stopAll(2000), 30_000)
