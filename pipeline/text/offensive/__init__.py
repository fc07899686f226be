"""Offensive and hateful content: the lexicon, its score, a batch prescreen and the trained classifier.

    lexicon     words, obfuscated spellings and phrase/pattern rules (pipeline/text/lexicons/)
    score       offensive_score(text), line_scores(text): the lexicon's matches combined
    prescreen   offensive_candidates(words): which documents of a batch can match at all
    model       unit_probs(words): logistic regression over hashed word and character n-grams, per line and text
    classifier  classifier_votes(words, texts, threshold, line_mode): the model voting beside the lexicon, with
                the lexicon's harmless senses as a veto; offensive_scores(texts, threshold): both, texts whole
"""
