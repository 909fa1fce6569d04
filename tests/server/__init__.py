"""Tests of the OpenAI-compatible server (real hologram-serve subprocesses)."""
