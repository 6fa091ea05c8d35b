import { workerConfigSpec } from '../shared/config';
import { runServiceMain } from '../shared/run-service';
import { startWorkerServer } from './server';

runServiceMain(
  'worker',
  workerConfigSpec,
  startWorkerServer,
  'A worker process: runs stage handlers for tasks the routers assign.',
);
