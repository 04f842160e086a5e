import { RecdistillError } from '../../errors.js';
import { defineCommand } from '../command.js';

// Placeholder until this stage lands; it fails loudly rather than pretending to work.
export default defineCommand({
  description: 'not built yet',
  options: {},
  async run() {
    throw new RecdistillError('E_INTERNAL', 'demo is not built yet.');
  },
});
