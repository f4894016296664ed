-- deepmouse results store: stable tables (DESIGN §7). Columns may be added, never renamed.
-- Every load replaces the tables whole, so re-running the store never duplicates rows.

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
    weights_sha256     VARCHAR
);

CREATE OR REPLACE TABLE layers (
    model_id     VARCHAR NOT NULL,
    layer_index  INTEGER NOT NULL,
    layer_name   VARCHAR NOT NULL,
    module_type  VARCHAR NOT NULL,
    n_features   BIGINT  NOT NULL,
    depth        DOUBLE  NOT NULL,
    PRIMARY KEY (model_id, layer_index)
);

CREATE OR REPLACE TABLE neurons (
    neuron_id          BIGINT PRIMARY KEY,
    experiment_id      BIGINT  NOT NULL,
    container_id       BIGINT  NOT NULL,
    area               VARCHAR NOT NULL,
    cre_line           VARCHAR NOT NULL,
    imaging_depth      INTEGER NOT NULL,
    cortical_layer     VARCHAR NOT NULL,
    reliability        DOUBLE  NOT NULL,    -- split-half, Spearman-Brown corrected
    cc_max             DOUBLE  NOT NULL,    -- Schoppe et al. 2016; cc_max^2 ~ reliability
    image_selective    BOOLEAN NOT NULL,
    running_modulated  BOOLEAN NOT NULL,
    selected           BOOLEAN NOT NULL
);

CREATE OR REPLACE TABLE rsa_scores (
    model_id       VARCHAR NOT NULL,
    layer_index    INTEGER NOT NULL,
    site_kind      VARCHAR NOT NULL,    -- area | area_layer | area_cre
    site           VARCHAR NOT NULL,    -- e.g. VISp, VISp|L4, VISp|Cux2-CreERT2
    metric         VARCHAR NOT NULL,    -- pearson | spearman | kendall_tau_a
    score          DOUBLE  NOT NULL,
    noise_ceiling  DOUBLE  NOT NULL,
    n_neurons      INTEGER NOT NULL
);

CREATE OR REPLACE TABLE regression_scores (
    model_id     VARCHAR NOT NULL,
    layer_index  INTEGER NOT NULL,
    neuron_id    BIGINT  NOT NULL,
    alpha        DOUBLE  NOT NULL,
    score        DOUBLE  NOT NULL
);

CREATE OR REPLACE TABLE model_scores (
    model_id           VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,   -- rsa | regression
    layer_selection    VARCHAR NOT NULL,   -- max | cv
    site_kind          VARCHAR NOT NULL,
    site               VARCHAR NOT NULL,
    score              DOUBLE  NOT NULL,
    ci_low             DOUBLE  NOT NULL,
    ci_high            DOUBLE  NOT NULL,
    normalized_score   DOUBLE,
    best_layer_index   INTEGER NOT NULL,
    best_layer_depth   DOUBLE  NOT NULL,
    n_neurons          INTEGER NOT NULL
);
