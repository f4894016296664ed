-- The two recordings side by side: each model's score in each area measured with two-photon
-- calcium imaging and with Neuropixels spikes (same method and layer selection), each model's
-- rank among the models in either recording, and per method x area the rank agreement of
-- the two recordings across models: Spearman r (Pearson r of the ranks, ties at their lowest
-- rank, as method_agreement). Empty unless data.modalities listed both.
CREATE OR REPLACE VIEW modality_agreement AS
WITH paired AS (
    SELECT c.method, c.layer_selection, c.site AS area, c.model_id,
           c.score AS calcium_score, n.score AS neuropixels_score,
           c.normalized_score AS calcium_normalized_score, n.normalized_score AS neuropixels_normalized_score,
           c.best_layer_depth AS calcium_best_layer_depth, n.best_layer_depth AS neuropixels_best_layer_depth,
           c.n_neurons AS calcium_n_neurons, n.n_neurons AS neuropixels_n_units,
           rank() OVER (PARTITION BY c.method, c.layer_selection, c.site ORDER BY c.score DESC) AS calcium_rank,
           rank() OVER (PARTITION BY c.method, c.layer_selection, c.site ORDER BY n.score DESC) AS neuropixels_rank
    FROM model_scores AS c
    JOIN model_scores AS n
      ON n.model_id = c.model_id AND n.method = c.method AND n.layer_selection = c.layer_selection
     AND n.site_kind = c.site_kind AND n.site = c.site
    WHERE c.modality = 'calcium' AND n.modality = 'neuropixels' AND c.site_kind = 'area'
)
SELECT p.*,
       count(*) OVER w AS n_models,
       corr(calcium_rank, neuropixels_rank) OVER w AS spearman_r
FROM paired AS p
WINDOW w AS (PARTITION BY method, layer_selection, area)
ORDER BY method, layer_selection, area, calcium_rank, model_id;
