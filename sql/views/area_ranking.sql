-- Areas ranked by how well the zoo predicts them, per method: the mean and best model
-- score in each area, and which model is best there. The mean normalised score skips the rows
-- flagged low_ceiling (no normalised score) and n_low_ceiling says how many it skipped.
CREATE OR REPLACE VIEW area_ranking AS
WITH ranked AS (
    SELECT s.*, row_number() OVER (PARTITION BY method, layer_selection, modality, site ORDER BY score DESC, model_id) AS position
    FROM model_scores AS s
    WHERE s.site_kind = 'area'
)
SELECT
    rank() OVER (PARTITION BY method, layer_selection, modality ORDER BY avg(score) DESC) AS rank,
    method, layer_selection, modality, site AS area,
    count(*)                                   AS n_models,
    avg(score)                                 AS mean_score,
    max(score)                                 AS best_score,
    avg(normalized_score)                      AS mean_normalized_score,
    count(*) FILTER (WHERE low_ceiling)        AS n_low_ceiling,
    any_value(model_id) FILTER (WHERE position = 1)         AS best_model_id,
    any_value(best_layer_depth) FILTER (WHERE position = 1) AS best_model_layer_depth,
    max(n_neurons)                             AS n_neurons
FROM ranked
GROUP BY method, layer_selection, modality, site
ORDER BY method, layer_selection, modality, rank;
