"""ml_collections configs, one file per paper/family: get_config(arg) -> ConfigDict."""
