"""How much of other people's mail the gateway understands, measured on public corpora.

Each task module (`strip`, `bounces`, `autoreplies`) reads the corpora under `tests/corpora/`
that were written by other projects (with their licences, and the upstream's own expected
answers as the truth) and returns one `Score` per source: our share right, beside the best
library we could install, measured on the same files. `bench/understanding.py` prints them; the
`test_*` modules here hold each source to its target.
"""
