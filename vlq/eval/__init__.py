"""Accuracy checks: MMBench (circular evaluation, VLMEvalKit's matching rules) and perplexity."""
