"""Built-in datasets, one module each; importing a module registers its loader."""
