import type { Knex } from 'knex';

/**
 * Conversations (M7, issue 10): a conversation belongs to the one tenant that named it
 * first; its messages are appended by ConversationAppendStep under the conversation lock.
 *
 * - conversation.last_fence: the largest fencing token (src/locks/distributed-lock.ts) a
 *   write to this conversation carried. The trigger below refuses a message whose fence is
 *   lower, so a holder that lost the lock (paused past its TTL) cannot write after the next
 *   holder did: the table itself enforces it, whatever the writer's code does.
 * - conversation_message: seq numbers the messages of one conversation (0, 1, ...), gap-free
 *   and in the order they were appended; (request_id, part) is UNIQUE, so a retried append of
 *   the same request writes nothing twice. Content is AES-256-GCM ciphertext under the
 *   payload codec's key `key_id` (like the body store); created_at drives the retention sweep.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('conversation', (t) => {
    t.text('conversation_id').primary();
    t.text('tenant_id').notNullable().references('tenant_id').inTable('tenant_quota').onDelete('CASCADE');
    t.bigInteger('last_fence').notNullable().defaultTo(0);
    t.integer('message_count').notNullable().defaultTo(0);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['tenant_id'], 'conversation_tenant_idx');
  });
  await knex.schema.createTable('conversation_message', (t) => {
    t.text('conversation_id').notNullable().references('conversation_id').inTable('conversation').onDelete('CASCADE');
    t.integer('seq').notNullable();
    t.text('request_id').notNullable();
    t.smallint('part').notNullable();
    t.text('role').notNullable();
    t.bigInteger('fence').notNullable();
    t.text('key_id').notNullable();
    t.binary('ciphertext').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['conversation_id', 'seq']);
    t.unique(['request_id', 'part'], { indexName: 'conversation_message_request_part_key' });
    t.index(['created_at'], 'conversation_message_created_at_idx');
  });
  await knex.raw(`ALTER TABLE conversation_message ADD CONSTRAINT conversation_message_role_check CHECK (role IN ('system', 'developer', 'user', 'assistant', 'tool'))`);
  await knex.raw(`ALTER TABLE conversation_message ADD CONSTRAINT conversation_message_fence_positive CHECK (fence > 0)`);
  await knex.raw(`
    CREATE FUNCTION conversation_message_fence_check() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE accepted bigint;
    BEGIN
      SELECT last_fence INTO accepted FROM conversation WHERE conversation_id = NEW.conversation_id;
      IF accepted IS NOT NULL AND NEW.fence < accepted THEN
        RAISE EXCEPTION 'stale fencing token % for conversation % (last accepted %)', NEW.fence, NEW.conversation_id, accepted
          USING ERRCODE = 'P0001', HINT = 'stale_fence';
      END IF;
      RETURN NEW;
    END $$`);
  await knex.raw(`CREATE TRIGGER conversation_message_fence BEFORE INSERT ON conversation_message FOR EACH ROW EXECUTE FUNCTION conversation_message_fence_check()`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('conversation_message');
  await knex.raw('DROP FUNCTION IF EXISTS conversation_message_fence_check()');
  await knex.schema.dropTable('conversation');
}
