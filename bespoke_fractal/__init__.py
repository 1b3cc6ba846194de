"""bespoke-fractal."""
