"""uid context

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Each UID row remembers the patient pseudonym and the new StudyInstanceUID of the instance that
first brought it, so `export-mappings --patient/--study` can export one patient's or one
study's part of the map. Both are pseudonymous values; rows written before this revision have
neither and appear only in a full export.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('uids', schema=None) as batch_op:
        batch_op.add_column(sa.Column('patient_pseudonym', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('study_uid', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_uids_patient_pseudonym'), ['patient_pseudonym'], unique=False)
        batch_op.create_index(batch_op.f('ix_uids_study_uid'), ['study_uid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('uids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_uids_study_uid'))
        batch_op.drop_index(batch_op.f('ix_uids_patient_pseudonym'))
        batch_op.drop_column('study_uid')
        batch_op.drop_column('patient_pseudonym')
