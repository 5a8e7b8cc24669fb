package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/validate"
)

// modelList is the answer of GET /api/v1/models.
type modelList struct {
	Models []modelreg.Info `json:"models"`
}

// maxVersionParamLen bounds the version path parameter; longer ones cannot be registered.
const maxVersionParamLen = 64

// handleListModels answers GET /api/v1/models.
func handleListModels(m ModelCatalog) echo.HandlerFunc {
	return func(c echo.Context) error {
		infos, err := m.List(c.Request().Context())
		if err != nil {
			return err
		}
		if infos == nil {
			infos = []modelreg.Info{}
		}
		return c.JSON(http.StatusOK, modelList{Models: infos})
	}
}

// handleGetModel answers GET /api/v1/models/:version (a version or an alias).
func handleGetModel(m ModelCatalog) echo.HandlerFunc {
	return func(c echo.Context) error {
		version := c.Param("version")
		if version == "" || len(version) > maxVersionParamLen {
			return modelreg.ErrNotFound
		}
		info, err := m.Get(c.Request().Context(), version)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, info)
	}
}

// ModelPromoter moves an alias to a version and tells every process (the registry plus its
// pub/sub announcement).
type ModelPromoter interface {
	Promote(ctx context.Context, version, alias string) error
}

// handlePromoteModel answers POST /api/v1/models/{version}/promote[?alias=NAME]: the alias
// (default latest) points at the version from now on, in every process within seconds.
func handlePromoteModel(p ModelPromoter, m ModelCatalog) echo.HandlerFunc {
	return func(c echo.Context) error {
		version := c.Param("version")
		alias := c.QueryParam("alias")
		if alias == "" {
			alias = prediction.LatestAlias
		}
		if err := p.Promote(c.Request().Context(), version, alias); err != nil {
			if errors.Is(err, modelreg.ErrInvalidAlias) {
				return validate.Field("alias", "must be 1 to 63 characters of [a-z0-9_-], starting with a letter")
			}
			return err
		}
		info, err := m.Get(c.Request().Context(), version)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, info)
	}
}
