"""Reference solutions for notebook 01 (tokenization): the two steps of the BPE merge loop.

They are the very functions the course's BPE trainer uses, in ``course_utils/tokenization.py``
(read them there): ``count_pairs`` counts overlapping adjacent pairs; ``merge_pair`` replaces
each occurrence left to right and skips past both members, so ``[5, 5, 5]`` with the pair
``(5, 5)`` becomes ``[new_id, 5]``.
"""

from course_utils.tokenization import count_pairs, merge_pair

__all__ = ["count_pairs", "merge_pair"]
