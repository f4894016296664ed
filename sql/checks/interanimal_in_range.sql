-- Inter-animal consistencies are correlations within [-1, 1] with ordered intervals, and only
-- areas with at least 2 animals have one.
SELECT area, modality, method, score, ci_low, ci_high, n_animals,
       CASE WHEN n_animals < 2 THEN 'a consistency with fewer than 2 animals'
            ELSE 'score out of range or CI inverted' END AS problem
FROM interanimal_consistency
WHERE (n_animals < 2 AND score IS NOT NULL)
   OR (score IS NOT NULL AND (NOT isfinite(score) OR score < -1 OR score > 1
                              OR NOT isfinite(ci_low) OR NOT isfinite(ci_high) OR ci_low > ci_high));
