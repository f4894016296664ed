-- A score flagged low_ceiling (its ceiling below scoring.min_ceiling) has no normalised
-- score, and one with a normalised score is not flagged.
SELECT model_id, method, layer_selection, modality, site_kind, site, normalized_score, noise_ceiling,
       'low_ceiling row with a normalised score' AS problem
FROM model_scores
WHERE low_ceiling AND normalized_score IS NOT NULL
UNION ALL
SELECT s.model_id, s.method, s.layer_selection, n.modality, 'neuron' AS site_kind, CAST(s.neuron_id AS VARCHAR) AS site,
       s.normalized_score, NULL AS noise_ceiling, 'low_ceiling neuron with a normalised score' AS problem
FROM neuron_scores AS s
JOIN neurons AS n USING (neuron_id)
WHERE s.low_ceiling AND s.normalized_score IS NOT NULL;
