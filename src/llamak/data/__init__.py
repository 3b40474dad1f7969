"""Korean/English data cleaning steps (PII so far; the datatrove pipeline comes with issue 4)."""
