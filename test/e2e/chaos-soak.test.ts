/**
 * The short fault-injection soak on the embedded stack (issue 14 item 4, M12): a worker, an API,
 * Redis, PostgreSQL, the Temporal dev server and the good upstream channel each SIGKILLed once
 * under load (test/helpers/short-soak.ts).
 */
import { describeShortSoak } from '../helpers/short-soak';

describeShortSoak('embedded', 1401);
