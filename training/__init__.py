"""Builds the models the service serves from our own training code; serving never imports it."""
