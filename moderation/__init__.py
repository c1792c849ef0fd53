"""Moderation policy (scores to review states), reviewer verdicts and the quality report."""
