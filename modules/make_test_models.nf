// Tiny random models in the real formats, for the `test` profile (CPU, no download).
// Deterministic for a given virnucpro version, so conf/modules.config stores them under it.
process MAKE_TEST_MODELS {
    label 'process_single'

    output:
    path 'dnabert', emit: dnabert
    path 'esm', emit: esm
    path 'classifier.pth', emit: classifier
    path 'classifier_300.pth', emit: classifier_300
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    virnucpro-make-test-models --outdir . ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p dnabert esm
    touch classifier.pth classifier_300.pth

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
