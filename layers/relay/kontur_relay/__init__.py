"""Kontur Feed Relay: Kontur.Extern and Diadoc pull feeds pushed to Amazon SNS."""
