"""Built-in distillation methods, one module each; importing a module registers its class."""
