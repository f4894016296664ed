-- Trained (supervised) vs. random vs. self-supervised vs. Taskonomy: mean score per
-- training category, method and area. The mean normalised score skips rows flagged
-- low_ceiling; n_low_ceiling says how many it skipped.
CREATE OR REPLACE VIEW training_ranking AS
SELECT
    rank() OVER (PARTITION BY s.method, s.layer_selection, s.modality, s.site ORDER BY avg(s.score) DESC) AS rank,
    s.method, s.layer_selection, s.modality, s.site AS area, m.training_category,
    count(DISTINCT s.model_id) AS n_models,
    avg(s.score) AS mean_score,
    max(s.score) AS best_score,
    avg(s.normalized_score) AS mean_normalized_score,
    count(*) FILTER (WHERE s.low_ceiling) AS n_low_ceiling
FROM model_scores AS s
JOIN models AS m USING (model_id)
WHERE s.site_kind = 'area'
GROUP BY s.method, s.layer_selection, s.modality, s.site, m.training_category
ORDER BY s.method, s.layer_selection, s.modality, s.site, rank;
