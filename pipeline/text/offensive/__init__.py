"""Offensive and hateful content: the lexicon, its score, a batch prescreen and the optional classifier.

    lexicon     words, obfuscated spellings and phrase/pattern rules (pipeline/text/lexicons/)
    score       offensive_score(text), line_scores(text): the lexicon's matches combined
    prescreen   offensive_candidates(words): which documents of a batch can match at all
    classifier  classifier_votes(texts, threshold): a trained model voting beside the lexicon
"""
