"""Stage drivers: each reads top to bottom like a recipe; mechanics live in `actors/`."""
