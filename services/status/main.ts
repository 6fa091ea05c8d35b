import { statusConfigSpec } from '../shared/config';
import { runServiceMain } from '../shared/run-service';
import { startStatusServer } from './server';

runServiceMain(
  'status',
  statusConfigSpec,
  startStatusServer,
  'The status service: the LevelDB task store, transitions, watches.',
);
