// The one version string of wald, walctl and the protocol they speak (INFO's "version",
// `wald --version`, `walctl --version`).

public enum WaldVersion {
    public static let string = "0.1.0"
}
