/**
 * Spend reports from the ledger (issue 12): committed usage rows of one tenant or one API
 * key, by commit time in [from, to), grouped by UTC day, model or API key. Sums are exact
 * integers (SUM over BIGINT is NUMERIC in PostgreSQL, read as text and checked), and each
 * query reads only its subject's rows through the partial indexes of migration
 * 20261202000002. Voided requests cost nothing and are not counted; reservations still
 * pending are not spend yet.
 */
import type { Knex } from 'knex';
import { safeInteger } from './ledger-types';

export type UsageGroupBy = 'day' | 'model' | 'api_key';

export interface UsageQuery {
  /** Inclusive. */
  from: Date;
  /** Exclusive. */
  to: Date;
  groupBy: UsageGroupBy;
}

export interface UsageRow {
  /** The day (YYYY-MM-DD, UTC), the model, or the API key id. */
  group: string;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  costMicros: number;
}

const GROUP_EXPRESSIONS: Record<UsageGroupBy, string> = {
  day: `to_char(committed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
  model: `COALESCE(model, '')`,
  api_key: `COALESCE(api_key_id, '')`,
};

interface UsageRecord {
  group: string;
  requests: string;
  prompt_tokens: string;
  completion_tokens: string;
  cost_micros: string;
}

export interface DailyModelCost {
  day: string;
  model: string;
  costMicros: number;
}

type Subject = { tenantId: string } | { apiKeyId: string };

function subjectOf(q: Subject): { column: 'tenant_id' | 'api_key_id'; id: string } {
  return 'apiKeyId' in q ? { column: 'api_key_id', id: q.apiKeyId } : { column: 'tenant_id', id: q.tenantId };
}

export function createUsageReportRepository(db: Knex) {
  /** Committed usage of the subject in [from, to), grouped by the given expressions (ORDER BY them). */
  async function grouped(subject: Subject, from: Date, to: Date, groups: string[]): Promise<Array<UsageRecord & { group2?: string }>> {
    const { column, id } = subjectOf(subject);
    const select = groups.map((g, i) => `${g} AS "${i === 0 ? 'group' : 'group2'}"`).join(', ');
    const result = await db.raw<{ rows: Array<UsageRecord & { group2?: string }> }>(
      `SELECT ${select},
              count(*)::text AS requests,
              COALESCE(sum(prompt_tokens), 0)::text AS prompt_tokens,
              COALESCE(sum(completion_tokens), 0)::text AS completion_tokens,
              COALESCE(sum(amount_micros), 0)::text AS cost_micros
         FROM billing_transaction
        WHERE ${column} = ? AND status = 'committed' AND kind = 'usage'
          AND committed_at >= ? AND committed_at < ?
        GROUP BY ${groups.map((_, i) => i + 1).join(', ')}
        ORDER BY ${groups.map((_, i) => i + 1).join(', ')}`,
      [id, from, to],
    );
    return result.rows;
  }

  return {
    async usage(q: UsageQuery & Subject): Promise<UsageRow[]> {
      const rows = await grouped(q, q.from, q.to, [GROUP_EXPRESSIONS[q.groupBy]]);
      return rows.map((r) => ({
        group: r.group,
        requests: safeInteger('requests', r.requests),
        promptTokens: safeInteger('prompt_tokens', r.prompt_tokens),
        completionTokens: safeInteger('completion_tokens', r.completion_tokens),
        costMicros: safeInteger('cost_micros', r.cost_micros),
      }));
    },

    /** Cost per UTC day and model (OpenAI's legacy daily_costs). */
    async dailyCostsByModel(subject: Subject, from: Date, to: Date): Promise<DailyModelCost[]> {
      const rows = await grouped(subject, from, to, [GROUP_EXPRESSIONS.day, GROUP_EXPRESSIONS.model]);
      return rows.map((r) => ({ day: r.group, model: r.group2 ?? '', costMicros: safeInteger('cost_micros', r.cost_micros) }));
    },
  };
}

export type UsageReportRepository = ReturnType<typeof createUsageReportRepository>;
