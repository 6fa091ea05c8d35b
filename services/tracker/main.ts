import { trackerConfigSpec } from '../shared/config';
import { runServiceMain } from '../shared/run-service';
import { startTrackerServer } from './server';

runServiceMain(
  'tracker',
  trackerConfigSpec,
  startTrackerServer,
  'The tracker: timers, retries, dead letters, pipelines, membership.',
);
