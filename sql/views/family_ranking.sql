-- Architecture families (convolutional, transformer, MLP-mixer, hybrid) ranked by their
-- models' mean score over the areas, per method and training category. The mean normalised
-- score skips rows flagged low_ceiling; n_low_ceiling says how many it skipped.
CREATE OR REPLACE VIEW family_ranking AS
SELECT
    rank() OVER (PARTITION BY s.method, s.layer_selection, s.modality, m.training_category ORDER BY avg(s.score) DESC) AS rank,
    s.method, s.layer_selection, s.modality, m.training_category, m.family,
    count(DISTINCT s.model_id) AS n_models,
    avg(s.score)   AS mean_score,
    max(s.score)   AS best_score,
    stddev_samp(s.score) AS sd_score,
    avg(s.normalized_score) AS mean_normalized_score,
    count(*) FILTER (WHERE s.low_ceiling) AS n_low_ceiling
FROM model_scores AS s
JOIN models AS m USING (model_id)
WHERE s.site_kind = 'area'
GROUP BY s.method, s.layer_selection, s.modality, m.training_category, m.family
ORDER BY s.method, s.layer_selection, s.modality, m.training_category, rank;
