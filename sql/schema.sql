-- deepmouse results store: stable tables (DESIGN §7). Columns may be added, never renamed.
-- Every load replaces the tables whole, so re-running the store never duplicates rows.

-- One row per zoo model in the run: family, training, category, parameters, published top-1.
CREATE OR REPLACE TABLE models (
    model_id           VARCHAR PRIMARY KEY,
    display_name       VARCHAR NOT NULL,
    family             VARCHAR NOT NULL,
    source             VARCHAR NOT NULL,
    architecture       VARCHAR NOT NULL,
    training           VARCHAR NOT NULL,
    training_category  VARCHAR NOT NULL,   -- supervised | random | self-supervised | taskonomy
    task_cluster       VARCHAR,
    n_params           BIGINT,
    weights_sha256     VARCHAR,
    imagenet_top1      DOUBLE,             -- % as published with the weights; NULL where no source says
    imagenet_top1_source VARCHAR
);

-- One row per model layer kept for scoring: name, module type, features, relative depth.
CREATE OR REPLACE TABLE layers (
    model_id     VARCHAR NOT NULL,
    layer_index  INTEGER NOT NULL,
    layer_name   VARCHAR NOT NULL,
    module_type  VARCHAR NOT NULL,
    n_features   BIGINT  NOT NULL,
    depth        DOUBLE  NOT NULL,
    PRIMARY KEY (model_id, layer_index)
);

-- One row per recorded neuron: area, Cre line, depth, reliability, CC_max, whether selected.
-- NULL where the source does not give or allow it: neurons given as mean responses without
-- trials (data.source: table) have no reliability, CC_max, selectivity or running modulation;
-- a table may leave out the imaging depth (cre_line and cortical_layer then say 'unknown').
CREATE OR REPLACE TABLE neurons (
    neuron_id          BIGINT PRIMARY KEY,
    experiment_id      BIGINT  NOT NULL,
    container_id       BIGINT  NOT NULL,
    animal             VARCHAR NOT NULL,    -- the mouse: the session's specimen (table: the animal column)
    area               VARCHAR NOT NULL,
    cre_line           VARCHAR NOT NULL,
    imaging_depth      INTEGER,
    cortical_layer     VARCHAR NOT NULL,
    reliability        DOUBLE,              -- split-half, Spearman-Brown corrected; NULL without trials
    cc_max             DOUBLE,              -- Schoppe et al. 2016; cc_max^2 ~ reliability; NULL without trials
    image_selective    BOOLEAN,             -- NULL without trials
    running_modulated  BOOLEAN,             -- NULL without trials
    selected           BOOLEAN NOT NULL,
    modality           VARCHAR NOT NULL     -- calcium (two-photon) | neuropixels (units: neuron_id = 10^12 + unit_id)
);

-- RSA score of every model layer at every site (area, area x layer, area x Cre line).
CREATE OR REPLACE TABLE rsa_scores (
    model_id       VARCHAR NOT NULL,
    layer_index    INTEGER NOT NULL,
    modality       VARCHAR NOT NULL,    -- calcium | neuropixels: the recording of the site's neurons
    site_kind      VARCHAR NOT NULL,    -- area | area_layer | area_cre
    site           VARCHAR NOT NULL,    -- e.g. VISp, VISp|L4, VISp|Cux2-CreERT2
    metric         VARCHAR NOT NULL,    -- pearson | spearman | kendall_tau_a
    score          DOUBLE  NOT NULL,
    noise_ceiling  DOUBLE,              -- split-half RDM reliability; NULL without trials
    n_neurons      INTEGER NOT NULL
);

-- Linear CKA of every model layer at every RSA site, with the site's split-half CKA ceiling.
CREATE OR REPLACE TABLE cka_scores (
    model_id       VARCHAR NOT NULL,
    layer_index    INTEGER NOT NULL,
    modality       VARCHAR NOT NULL,    -- calcium | neuropixels: the recording of the site's neurons
    site_kind      VARCHAR NOT NULL,    -- the RSA sites: area | area_layer | area_cre
    site           VARCHAR NOT NULL,
    estimator      VARCHAR NOT NULL,    -- unbiased (U-statistic HSIC) | biased
    score          DOUBLE  NOT NULL,
    noise_ceiling  DOUBLE,              -- split-half CKA, Spearman-Brown corrected; NULL without trials
    n_neurons      INTEGER NOT NULL
);

-- Ridge regression fit of every selected neuron on every model layer (a view over Parquet).
CREATE OR REPLACE TABLE regression_scores (
    model_id     VARCHAR NOT NULL,
    layer_index  INTEGER NOT NULL,
    neuron_id    BIGINT  NOT NULL,
    alpha        DOUBLE  NOT NULL,
    score        DOUBLE  NOT NULL
);

-- Provenance of this build: data source, params, code and package versions.
CREATE OR REPLACE TABLE runs (
    run_id              VARCHAR PRIMARY KEY,  -- digest of everything below but `created`
    source              VARCHAR NOT NULL,     -- simulated | nwb_dir | allen | table: simulated results say so
    n_experiments       INTEGER NOT NULL,
    experiments         VARCHAR NOT NULL,     -- JSON list of experiment ids
    experiments_digest  VARCHAR NOT NULL,     -- sha256 over the experiments' file digests (manifest; table: its files')
    params_digest       VARCHAR NOT NULL,     -- sha256 of the validated params (data/params.json)
    package_versions    VARCHAR NOT NULL,     -- JSON: deepmouse, torch, timm, allensdk, ...
    code_digest         VARCHAR NOT NULL,     -- sha256 of the package's code, zoo registry and SQL
    code_revision       VARCHAR,              -- git commit (+dirty) where the run was made, if any
    dvc_lock_digest     VARCHAR,              -- sha256 of dvc.lock as the run found it
    trial_responses     BOOLEAN NOT NULL,     -- false: means without trials (table); no reliability or ceilings
    extra_areas         VARCHAR NOT NULL,     -- JSON list of areas accepted besides the six (data.table.extra_areas)
    created             TIMESTAMP NOT NULL
);

-- Each model's score per method, layer selection and site, with interval and noise ceiling.
CREATE OR REPLACE TABLE model_scores (
    model_id           VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,   -- rsa | cka | regression | pls
    layer_selection    VARCHAR NOT NULL,   -- max (best layer, optimistic) | cv (chosen and scored on disjoint data)
    modality           VARCHAR NOT NULL,   -- calcium | neuropixels: the recording of the site's neurons
    site_kind          VARCHAR NOT NULL,
    site               VARCHAR NOT NULL,
    score              DOUBLE  NOT NULL,
    ci_low             DOUBLE  NOT NULL,   -- bootstrap percentile interval, layer selection inside each replicate
    ci_high            DOUBLE  NOT NULL,
    normalized_score   DOUBLE,             -- score / sqrt(noise_ceiling) (per neuron for regression); NULL if low_ceiling
    noise_ceiling      DOUBLE,             -- RSA: split-half RDM reliability; CKA: split-half CKA; regression, pls: mean neuron ceiling
    best_layer_index   INTEGER NOT NULL,   -- cv: the layer chosen most often over folds / splits
    best_layer_depth   DOUBLE  NOT NULL,
    layer_stability    DOUBLE  NOT NULL,   -- fraction of folds / splits that chose best_layer_index
    n_neurons          INTEGER NOT NULL,
    low_ceiling        BOOLEAN NOT NULL,   -- ceiling below scoring.min_ceiling (regression: every neuron's): no normalized_score
    n_low_ceiling      INTEGER NOT NULL,   -- units left out of normalized_score: neurons (regression), the site (RSA, CKA: 0 or 1)
    source             VARCHAR NOT NULL,   -- the neural data: simulated | nwb_dir | allen | table
    n_animals          INTEGER NOT NULL,   -- animals among the site's selected neurons
    interanimal_consistency DOUBLE,        -- area sites: the other animals' score (interanimal_consistency)
    normalized_interanimal  DOUBLE,        -- score / interanimal_consistency; NULL without one, or where its CI reaches 0
    above_interanimal  BOOLEAN             -- score > interanimal_consistency: better than another mouse
);

-- Each selected neuron's score per model, method and layer selection (a view over Parquet).
CREATE OR REPLACE TABLE neuron_scores (
    model_id          VARCHAR NOT NULL,
    method            VARCHAR NOT NULL,   -- regression | pls
    layer_selection   VARCHAR NOT NULL,
    neuron_id         BIGINT  NOT NULL,
    score             DOUBLE  NOT NULL,   -- max: at the area's best layer; cv: held-out r averaged over folds
    normalized_score  DOUBLE,             -- score / sqrt(ceiling of scoring.ceiling); NULL if low_ceiling or no ceiling
    low_ceiling       BOOLEAN             -- the neuron's ceiling is below scoring.min_ceiling (or <= 0)
);

-- Every pair of models per method, selection and site: difference, paired interval, p, q.
CREATE OR REPLACE TABLE model_comparisons (
    method           VARCHAR NOT NULL,
    layer_selection  VARCHAR NOT NULL,
    modality         VARCHAR NOT NULL,   -- models are compared within one recording
    site_kind        VARCHAR NOT NULL,
    site             VARCHAR NOT NULL,
    model_a          VARCHAR NOT NULL,
    model_b          VARCHAR NOT NULL,   -- each unordered pair once, model_a < model_b
    difference       DOUBLE  NOT NULL,   -- score(model_a) - score(model_b)
    ci_low           DOUBLE  NOT NULL,   -- paired bootstrap over neurons (regression) or stimuli (RSA, CKA)
    ci_high          DOUBLE  NOT NULL,
    p_value          DOUBLE  NOT NULL,
    q_value          DOUBLE  NOT NULL,   -- Benjamini-Hochberg over the pairs of the site
    distinguishable  BOOLEAN NOT NULL,   -- q_value < scoring.comparisons.fdr
    PRIMARY KEY (method, layer_selection, modality, site_kind, site, model_a, model_b)
);

-- How well each area's neurons are predicted from the other animals' neurons, by the models'
-- mapping, folds and bootstrap (the inter-animal ceiling). NULL scores: fewer than 2 animals.
CREATE OR REPLACE TABLE interanimal_consistency (
    area              VARCHAR NOT NULL,
    modality          VARCHAR NOT NULL,   -- calcium | neuropixels: animals are compared within one recording
    method            VARCHAR NOT NULL,   -- rsa | cka | regression | pls (when scoring.pls.enabled)
    score             DOUBLE,             -- mean over target neurons (regression, PLS) or target animals (RSA)
    ci_low            DOUBLE,             -- bootstrap over neurons (regression) or stimuli (RSA)
    ci_high           DOUBLE,
    normalized_score  DOUBLE,             -- split-half corrected: the target's score / sqrt(its ceiling), none below scoring.min_ceiling
    n_animals         INTEGER NOT NULL,
    n_neurons         INTEGER NOT NULL,
    PRIMARY KEY (area, modality, method)
);
