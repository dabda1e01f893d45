"""Layout pieces of the page that are large enough to read on their own (Streamlit only; every
rule they show lives in core/)."""
