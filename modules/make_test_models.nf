// Tiny random models in the real formats, for the `test` profile (CPU, no download).
// Deterministic for a given virnucpro version, so conf/modules.config stores them under it.
// Versions: storeDir keeps only val and path outputs (Nextflow skips the store for an eval output),
// so the versions are written to files stored with the content: a store hit reports the ones that made it.
process MAKE_TEST_MODELS {
    label 'process_single'

    output:
    path 'dnabert', emit: dnabert
    path 'esm', emit: esm
    path 'classifier.pth', emit: classifier
    path 'classifier_300.pth', emit: classifier_300
    tuple val("${task.process}"), val('virnucpro'), path('virnucpro.version'), emit: versions_virnucpro, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-make-test-models --outdir . ${args}
    virnucpro-make-test-models --version > virnucpro.version
    """

    stub:
    """
    mkdir -p dnabert esm
    touch classifier.pth classifier_300.pth
    virnucpro-make-test-models --version > virnucpro.version
    """
}
