"""Published MoE architectures (open models and the Google papers' largest), one file per
family: get_config('<model>' | '<model>_tiny' | 'tiny'); see architecture.py."""
