"""Reading configs: the one override parser, the range checks, the resolvers the YAML uses."""
