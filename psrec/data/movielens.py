"""MovieLens ratings joined with users and movies, one rating per line (the CSV export of
MovieLens-1M that CTR tools ship): user_id, movie_id, rating, timestamp, title, genres,
gender, age, occupation, zip. Titles may be quoted ("Apartment, The (1960)").

The raw `::`-separated ratings.dat/users.dat/movies.dat triple is not read here: join it first.
"""
from __future__ import annotations

import os

from psrec.data.features import FeatureConfig
from psrec.data.tabular import FeatureCsvSource

__all__ = ["MovieLensSource", "MOVIELENS_COLUMNS", "MOVIELENS_FEATURES", "LIKE_THRESHOLD"]

MOVIELENS_COLUMNS = ("user_id", "movie_id", "rating", "timestamp", "title", "genres",
                     "gender", "age", "occupation", "zip")
# Ratings of 4 and 5 stars count as "liked": the usual binarisation of MovieLens for CTR
# models; with it about 57% of ML-1M ratings are positive.
LIKE_THRESHOLD = 4.0

# (file column, field name, cardinality in ML-1M: 6040 users, 3883 movies, 2 genders,
# 7 age groups, 21 occupations, ~3.4 k zip codes, 18 genres).
_SINGLE = ((0, "user_id", 6040), (1, "movie_id", 3883), (6, "gender", 2), (7, "age", 7),
           (8, "occupation", 21), (9, "zip", 3439))
# The spec: the single-valued fields, then genres (a sequence, field 6: after them).
MOVIELENS_FEATURES = (tuple(FeatureConfig(name, cardinality=card) for _, name, card in _SINGLE)
                      + (FeatureConfig("genres", type="sequence", separator="|", cardinality=18),))


class MovieLensSource(FeatureCsvSource):
    """A MovieLens ratings file as a DataSource (the `movielens` preset of the spec reader): 6 single-valued
    fields and multi-valued genres.

    Args:
        path: the file.
        strict: raise DataError at the first malformed line instead of skipping it.
        delimiter: None detects tab or comma from the first line.
        header: None detects it (a first line whose rating is not a number is a header).

    Fields, in order: user_id, movie_id, gender, age, occupation, zip (the columns of
    `Batch.keys`, (B, 6) int64), then genres (field 6, `Batch.multi[0]`: a Ragged of one key
    per pipe-separated genre; an empty cell gets the genres missing key).

    Labels (B,) float32: rating >= 4 (`LIKE_THRESHOLD`). A rating must be a number in
    [0.5, 5] (ML-1M has whole stars 1-5, later releases half stars from 0.5).

    No dense features (dense is (B, 0)): age is already a bucket code (1, 18, 25, ...), so
    it is categorical; the timestamp is when the rating was entered, not when the film was
    watched (ML-1M users rated in bulk sessions after signing up), so neither it nor its hour
    says much about taste, and as a magnitude it would mostly encode the split order. The
    title is left out too: it is a function of movie_id.

    Example:
        >>> src = MovieLensSource("/work/shared/data/movielens_sample.txt")
        >>> b = src.read(0, 2)
        >>> b.keys.shape, b.multi[0].offsets.tolist()   # Comedy|Drama, Action|Thriller
        ((2, 6), [0, 2, 4])
    """

    def __init__(self, path: str | os.PathLike, *, strict: bool = False,
                 delimiter: str | None = None, header: bool | None = None) -> None:
        super().__init__(path, MOVIELENS_FEATURES, "rating", columns=MOVIELENS_COLUMNS, delimiter=delimiter,
                         header=header, label_threshold=LIKE_THRESHOLD, strict=strict)

    def describe(self):
        from psrec.data.spec import SourceSpec

        return SourceSpec.of(self, path=self.path, strict=self.strict, delimiter=self.delimiter,
                             header=self.header is not None)
