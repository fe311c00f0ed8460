// Join one shard's DNABERT-S and ESM-2 embeddings into 3328-wide features (CPU).
// Stored (conf/modules.config) under meta.features_key, which main.nf derives from the store
// folders of the two embeddings, so it carries all of their keys. Output name: ext.prefix, else the shard.
// Versions: storeDir keeps only val and path outputs (Nextflow skips the store for an eval output),
// so the versions are written to files stored with the content: a store hit reports the ones that made it.
process MERGE {
    tag "${meta.shard}"
    label 'process_single'

    input:
    tuple val(meta), path(dnabert), path(esm)

    output:
    tuple val(meta), path("${task.ext.prefix ?: meta.shard}.features.h5"), emit: features
    tuple val("${task.process}"), val('virnucpro'), path('virnucpro.version'), emit: versions_virnucpro, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def prefix = task.ext.prefix ?: meta.shard
    """
    virnucpro-merge --nucleotide ${dnabert} --protein ${esm} --output ${prefix}.features.h5 ${args}
    virnucpro-merge --version > virnucpro.version
    """

    stub:
    """
    touch ${task.ext.prefix ?: meta.shard}.features.h5
    virnucpro-merge --version > virnucpro.version
    """
}
