"""Korean/English corpus preparation on datatrove: clean (PII, profanity, quality, dedup), mix, pack."""
