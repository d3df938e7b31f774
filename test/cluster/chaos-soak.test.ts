/**
 * The short fault-injection soak on the production topology (issue 14 item 4, M12): a worker, an
 * API, one Temporal server process, one Redis master and the good upstream channel each
 * SIGKILLed once under load, on a Temporal cluster and Redis Cluster of its own
 * (test/helpers/short-soak.ts).
 */
import { describeShortSoak } from '../helpers/short-soak';

describeShortSoak('cluster', 1402);
