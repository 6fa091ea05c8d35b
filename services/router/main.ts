import { routerConfigSpec } from '../shared/config';
import { runServiceMain } from '../shared/run-service';
import { startRouterServer } from './server';

runServiceMain(
  'router',
  routerConfigSpec,
  startRouterServer,
  'A router: submits, ready queues, worker streams.',
);
