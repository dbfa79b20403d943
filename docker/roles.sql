-- The role application sessions run as on every node: an ordinary one (no
-- superuser, no BYPASSRLS), owning the database so that it can create
-- tables. Ferry's own sessions use the nodes' DSN user (postgres). Roles
-- are per server, as in PostgreSQL: every node needs this role.
CREATE ROLE app LOGIN PASSWORD 'secret';
ALTER DATABASE app OWNER TO app;
