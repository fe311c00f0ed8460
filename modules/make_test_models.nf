// Tiny random models in the real formats, for the `test` profile (CPU, no download).
// Deterministic for a given virnucpro version, so the version is their store key.
process MAKE_TEST_MODELS {
    label 'process_single'
    storeDir "${params.store_dir}/test_models/${workflow.manifest.version}"

    output:
    path 'dnabert', emit: dnabert
    path 'esm', emit: esm
    path 'classifier.pth', emit: classifier
    path 'versions.yml', emit: versions

    script:
    """
    virnucpro-make-test-models --outdir .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p dnabert esm
    touch classifier.pth

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
