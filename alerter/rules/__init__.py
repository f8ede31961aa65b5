"""Rule files: `schema` (pure: the rules admins write) and `loader` (YAML -> rules, with
file:line problems). Import each from its module: the pure engine needs the schema
without pulling in the loader's YAML and file reading."""
