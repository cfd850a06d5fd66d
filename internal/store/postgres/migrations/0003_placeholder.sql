-- Placeholder for migration 0003, which another change adds in parallel:
-- migrations must be numbered without gaps (engine.Migrations). When
-- both changes meet, this file gives way to the real 0003; 0004 does not
-- depend on anything 0003 creates.
SELECT 1;
