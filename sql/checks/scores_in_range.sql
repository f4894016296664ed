-- Correlation scores are finite and within [-1, 1], with ordered confidence intervals.
SELECT model_id, method, layer_selection, modality, site_kind, site, score, ci_low, ci_high,
       'score out of range or CI inverted' AS problem
FROM model_scores
WHERE NOT isfinite(score) OR score < -1 OR score > 1
   OR NOT isfinite(ci_low) OR NOT isfinite(ci_high) OR ci_low > ci_high;
