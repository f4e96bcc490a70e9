"""Shipped benchmark data: a public-domain corpus and the refinement prompt set (README.md)."""
