"""routes, projects, deliveries

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

One node, several projects: each patient and UID row belongs to a project (rows written before
this revision belong to project `default`, whose keys are the node's keys of before, so they stay
valid). Jobs remember the called AE title, the caller's address, their route and project. Each
(instance, destination) pair is one delivery; jobs waiting for the single destination of before
(clean, forwarding, failed) become one due delivery to the destination `default`, which is the
name a config without routes gives its `forward.destination`.
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('called_ae', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('source_host', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('route', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('project', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_jobs_sop_instance_hash', ['sop_instance_hash'], unique=False)
    for table in ('patients', 'uids'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('project', sa.String(length=64), server_default='default', nullable=False))
            batch_op.create_index(batch_op.f(f'ix_{table}_project'), ['project'], unique=False)
    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('destination', sa.String(length=64), nullable=False),
    sa.Column('state', sa.Enum('pending', 'sending', 'delivered', 'quarantined', name='delivery_state', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('waiting_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'destination', name='uq_deliveries_job_destination')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_claim', ['destination', 'state', 'next_attempt_at'], unique=False)
    op.execute(
        "INSERT INTO deliveries (job_id, node, destination, state, attempts, next_attempt_at, last_error, updated_at) "
        "SELECT id, node, 'default', 'pending', 0, next_attempt_at, last_error, updated_at FROM jobs "
        "WHERE state IN ('clean', 'forwarding', 'failed')")
    op.execute("UPDATE jobs SET state = 'clean', lease_owner = NULL, lease_until = NULL "
               "WHERE state IN ('forwarding', 'failed')")
    op.execute("UPDATE jobs SET route = 'default', project = 'default' "
               "WHERE state IN ('clean', 'forwarded')")


def downgrade() -> None:
    op.execute("UPDATE jobs SET state = 'failed' WHERE state = 'clean' AND id IN "
               "(SELECT job_id FROM deliveries WHERE state <> 'delivered')")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_claim')
    op.drop_table('deliveries')
    for table in ('uids', 'patients'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f'ix_{table}_project'))
            batch_op.drop_column('project')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_sop_instance_hash')
        batch_op.drop_column('project')
        batch_op.drop_column('route')
        batch_op.drop_column('source_host')
        batch_op.drop_column('called_ae')
